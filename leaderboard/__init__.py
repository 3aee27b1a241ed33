"""glocal leaderboard."""
