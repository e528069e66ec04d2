"""Do generative models of network weights memorise their training checkpoints? Filled by its own issue."""
