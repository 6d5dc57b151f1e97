"""The parts of tools/benchmark.py: measurement, inputs, the torchvision twin model and the cases
of each task. The script holds the command line and runs each case in a subprocess."""
