"""The in-sandbox `servo` package (SPEC §6.2): relays Ochothon CLI commands
to the portal through servo's Unix socket. Standard library only."""
