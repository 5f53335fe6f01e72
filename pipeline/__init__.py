"""DiffSentry stream pipeline: settings, topics, CLI and the faust app wiring."""
