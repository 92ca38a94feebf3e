"""What the web server, the MCP server and the background keeper share: jobs, file guard, thumbnails, listeners."""
