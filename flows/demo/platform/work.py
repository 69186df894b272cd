"""The little bit of real work each simulated component does per request."""

from __future__ import annotations

import random


def prove(n: int) -> bool:
    """'Prove' that n has a prime factorisation by finding it (trial division)."""
    m, d = n, 2
    while d * d <= m:
        while m % d == 0:
            m //= d
        d += 1
    return True


def lookup(store: dict[int, str], key: int, cache_size: int) -> str:
    """A theorem repository: fetch or create an entry, evicting beyond the cache size."""
    if key not in store:
        store[key] = f"theorem-{key}"
        while len(store) > max(cache_size, 1):
            store.pop(next(iter(store)))
    return store[key]


def evolve(rng: random.Random, genome_len: int = 32, pop: int = 16, gens: int = 5) -> int:
    """A tiny genetic algorithm on OneMax; returns the best fitness reached."""
    population = [[rng.randint(0, 1) for _ in range(genome_len)] for _ in range(pop)]
    for _ in range(gens):
        population.sort(key=sum, reverse=True)
        parents = population[: pop // 2]
        children = []
        for _ in range(pop - len(parents)):
            a, b = rng.sample(parents, 2)
            cut = rng.randrange(genome_len)
            child = a[:cut] + b[cut:]
            if rng.random() < 0.2:
                i = rng.randrange(genome_len)
                child[i] ^= 1
            children.append(child)
        population = parents + children
    return max(sum(g) for g in population)
