"""The floor every layer stands on: the user error, careful file reading and atomic writing, logs, the
host's facts, package data, output comparison and the image recipe. Imports nothing of edgeffnet above it."""
