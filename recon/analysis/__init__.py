"""Analysis of volumes and runs: moments, FSC resolution, meshes and their comparison, inspection."""
