//! Galley: validates and stores mesh configuration and streams it over MCP
