"""Local stand-ins (Upstash REST server, offline model, dev server): never deployed."""
