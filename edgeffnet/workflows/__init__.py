"""What a user runs on top of builds and bundles: sweep, predict, class activation maps, finishing an
engine on the device."""
