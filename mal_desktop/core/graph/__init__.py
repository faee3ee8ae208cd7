"""Layer trees and permutation spaces discovered from a model's graph."""
