"""Service code for the agent-sessions deployment: no Flask, no `api/` imports."""
