from agentbox.entry import run

run()
