"""The workflow stages: prepare, serve, grade, write, train, evaluate, report.

A stage never imports the controller; the controller never does a stage's work.
"""
