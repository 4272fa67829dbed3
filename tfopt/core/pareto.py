"""The Pareto front of (cost, value) points: the report's plots and the
search pick from it."""

from typing import List

__all__ = ["pareto_front"]


def pareto_front(points: List[tuple]) -> List[int]:
  """Indices of the points (cost, accuracy) no other point beats on both,
  cheapest first: what a user picks from."""
  order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
  front, best = [], float("-inf")
  for index in order:
    if points[index][1] > best:
      front.append(index)
      best = points[index][1]
  return front
