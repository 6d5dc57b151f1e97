"""Samplers that decide which dataset indices each process reads."""
from .distributed_sampler import InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler

__all__ = ["TrainingSampler", "RepeatFactorTrainingSampler", "InferenceSampler"]
