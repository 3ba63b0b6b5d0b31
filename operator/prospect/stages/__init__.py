"""The workflow stages: prepare, serve, grade, write, train, evaluate, report. A stage never imports the controller."""
