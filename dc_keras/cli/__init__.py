"""Command-line tools of dc_keras (console scripts declared in setup.cfg)."""
