"""Helpers shared by the test modules: builders, captured reviews, configurations, readers of
answers, server processes, the fake API server and the guards for external tools. Nothing here
is collected as a test, and no test module imports from another test module: what two of them
need lives here, named for what it holds (tests/README.md has the map)."""
