"""sioscale: load testing and capacity planning for Socket.IO clusters behind load balancers."""

__version__ = "0.1.0"
