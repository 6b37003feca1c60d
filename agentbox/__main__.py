from agentbox.cli.main import entry

entry()
