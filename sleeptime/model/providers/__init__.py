"""Model providers that ship with sleeptime, one file each."""
