"""Image registration: transforms, classical and learned registration, evaluation, the ``deepmia register`` command.

Transforms are objects (apply, compose, invert, save); classical registration runs on SimpleITK and learned
registration on a VoxelMorph-style network; evaluation covers label overlap, landmark error, the Jacobian and
inverse consistency.
"""
