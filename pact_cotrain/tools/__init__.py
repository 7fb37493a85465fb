"""Tools a user brings: Python functions, environment methods and MCP servers (issue 29).

`pact_cotrain.envs.user_env` turns them into the project's Environment protocol; the modules here
know nothing about training.
"""
