"""Development tooling, not run in production: the fleet simulator and its ground truth, the
end-to-end demo, the fault-injection harness, the benchmark, verification against the ground
truth and the helper that runs the worker as a child process. The product is ``pipeline``;
nothing in it imports from here except the CLI commands that start these tools."""
