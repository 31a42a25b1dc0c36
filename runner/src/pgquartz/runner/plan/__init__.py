"""Pure planning: matrix instances and the step graph, before anything runs."""
