"""Metrics, the evaluation, the report and the leaderboard."""
