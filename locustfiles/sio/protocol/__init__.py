"""Sans-IO Engine.IO / Socket.IO client core: bytes and timer ticks in, actions out; no sockets."""
