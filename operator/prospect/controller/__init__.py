"""The Kubernetes controller: sequences the stages as workloads; never does a stage's work."""
