"""The hostile-server suite (issue 9): one misbehaving Engine.IO/Socket.IO server per mode."""
