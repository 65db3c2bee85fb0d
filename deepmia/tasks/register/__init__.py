"""Image registration: transforms as objects, classical (SimpleITK) and learned (VoxelMorph-style) registration,
evaluation (label overlap, landmark error, Jacobian, inverse consistency) and the ``deepmia register`` command."""
