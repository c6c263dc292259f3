"""Small helpers shared by every package of the suite."""
