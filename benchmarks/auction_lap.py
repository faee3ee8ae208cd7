"""Forward auction algorithm (Bertsekas) for the rectangular LAP, vectorised in torch.

A benchmark contender, not part of mal_desktop: ``lap_cuda.py`` times it against the core's
``solve_lap`` (scipy). It was the core's opt-in GPU solver (``MAL_LAP=auction``) until measured
slower than scipy at every width tried (README.md, "LAP on CUDA"); it lives here so the
measurement can be repeated on new hardware.

Runs on whatever device the cost tensor is on, so that on CUDA the assignment is solved where the
cost matrix was built (no m x n device-to-host copy, no O(n^3) CPU solve).

Algorithm (maximisation; a minimisation is solved on the negated costs):

* *Persons* are the rows of a k x n benefit matrix ``a`` (k = min(m, n); the cost is transposed
  when m > n) and *objects* its columns; each object carries a price ``p``. A rectangular problem
  is padded with n - k identical dummy persons of benefit 0 (same optimum: LAP-equivalence,
  mal_method.md sec. 4). Without them epsilon scaling is not valid on a rectangular problem (an
  object left unassigned by the last phase may keep a high price from an earlier one). The dummies
  bid as one class, each for one of the cheapest objects no dummy holds (see ``_auction``).
* One *round* (Jacobi style): every unassigned person looks at its values ``a[i] - p``, picks an
  object ``j`` and bids ``p[j] + v_j - w_j + eps`` where ``w_j`` is its best value among the other
  objects (top-2 per row). Each object goes to its highest bidder (``scatter_reduce`` amax; ties
  go to the highest person index), its previous owner becomes unassigned, its price becomes the
  winning bid.
* Ties: bidders choose ``j`` by ``values + (eps / 2) * noise`` with a fixed seeded noise matrix in
  [0, 1). A bid on any object keeps eps-complementary slackness (the bid is computed against the
  best *other* object), and the increment stays >= eps / 2 > 0, so this is a valid auction step;
  it stops identical persons (dummies, all-equal costs) from all bidding for the same object and
  fighting a price war of one object per round.
* Epsilon scaling: phases with eps = range / 4, then divided by 6 per phase down to
  ``eps_final``; each phase starts with everybody unassigned and keeps the prices of the previous
  phase (prices only rise, so every phase terminates).

Guarantee: the final assignment satisfies eps_final-complementary slackness, hence its objective is
within ``k * eps_final`` of the optimum for a square problem and ``2 * k * eps_final`` for a
rectangular one (the dummies' class condition lets their prices differ by eps). Default
``eps_final`` (B = k or 2k as above):

* integer-valued costs: ``1 / (B + 1)``, so the gap is < 1 and the assignment is exactly optimal;
* otherwise ``1e-6 * range / B`` (range = max - min of the costs, with 0 included when the problem
  is rectangular): the objective is within ``1e-6 * range`` of the optimum.

Speed: measured on an H100 it is slower than scipy on a CPU copy at widths 512-4096 (one bidding
round is ~10 small kernels plus a host sync, and thousands of rounds are needed).

All arithmetic runs in float64: prices reach the size of ``range`` and move in steps of
``eps_final``, which float32 would round away.
"""

from __future__ import annotations

import torch

from mal_desktop.core.errors import AlignmentError

#: Default cap on bidding rounds over all phases; past it the solve falls back to scipy.
DEFAULT_MAX_ROUNDS = 200_000
#: Relative accuracy of the default eps_final for real-valued costs (gap <= REL_TOL * range).
REL_TOL = 1e-6
_SCALE_FACTOR = 6.0
_NOISE_SEED = 12345


def _default_eps_final(benefit: torch.Tensor) -> float:
    k, size = benefit.shape
    # Guaranteed gap: k * eps (square) or 2 * k * eps (rectangular, module docstring).
    bound_factor = k if k == size else 2 * k
    if bool(torch.equal(benefit, torch.round(benefit))):
        return 1.0 / (bound_factor + 1)
    value_range = float((benefit.max() - benefit.min()).item())
    if k < size:
        # The dummies' benefit 0 is part of the padded problem's range.
        value_range = max(float(benefit.max().item()), 0.0) - min(float(benefit.min().item()), 0.0)
    return REL_TOL * value_range / bound_factor


def _auction(benefit: torch.Tensor, eps_final: float, max_rounds: int) -> torch.Tensor | None:
    """Maximise on a k x n float64 benefit (k <= n) padded with n - k dummy persons.

    Returns the object of each of the k real persons, or None if max_rounds was reached.
    """
    k, size = benefit.shape
    device = benefit.device
    value_range = max(float(benefit.max().item()), 0.0) - min(float(benefit.min().item()), 0.0)
    gen = torch.Generator(device=device).manual_seed(_NOISE_SEED)
    noise = torch.rand((k, size), generator=gen, device=device, dtype=torch.float32)
    prices = torch.zeros(size, dtype=torch.float64, device=device)
    person_obj = torch.full((size,), -1, dtype=torch.long, device=device)
    owner = torch.full((size,), -1, dtype=torch.long, device=device)
    neg_inf = torch.full((size,), float("-inf"), dtype=torch.float64, device=device)
    no_person = torch.full((size,), -1, dtype=torch.long, device=device)
    eps = max(value_range / 4.0, eps_final)
    rounds = 0
    while True:
        person_obj.fill_(-1)
        owner.fill_(-1)
        while True:
            unassigned = torch.nonzero(person_obj < 0).squeeze(1)
            if unassigned.numel() == 0:
                break
            rounds += 1
            if rounds > max_rounds:
                return None
            real = unassigned[unassigned < k]
            dummies = unassigned[unassigned >= k]
            bidders, choices, bid_list = [], [], []
            if real.numel() > 0:
                values = benefit.index_select(0, real) - prices
                top_values, top_idx = values.topk(2, dim=1)
                score = values + (eps / 2.0) * noise.index_select(0, real)
                choice = score.argmax(dim=1)
                chosen_value = values.gather(1, choice.unsqueeze(1)).squeeze(1)
                # Best value among the *other* objects: the runner-up if we chose the best one.
                other_best = torch.where(choice == top_idx[:, 0], top_values[:, 1],
                                         top_values[:, 0])
                bidders.append(real)
                choices.append(choice)
                bid_list.append(prices[choice] + (chosen_value - other_best) + eps)
            if dummies.numel() > 0:
                # Dummies are identical (benefit 0): as one class they bid for the u cheapest
                # objects no dummy holds, each at the (u+1)-th cheapest price + eps. This keeps
                # the class condition "dummy-held prices <= cheapest other price + eps" (which
                # bounds the gap by 2 * k * eps) and avoids a price war of one object per round.
                count = dummies.numel()
                free_prices = torch.where(owner >= k, torch.inf, prices)
                cheap_prices, cheap_idx = free_prices.topk(count + 1, largest=False)
                bidders.append(dummies)
                choices.append(cheap_idx[:count])
                bid_list.append((cheap_prices[count] + eps).expand(count))
            bidder = torch.cat(bidders)
            choice = torch.cat(choices)
            bids = torch.cat(bid_list)
            best_bid = neg_inf.scatter_reduce(0, choice, bids, reduce="amax")
            is_top = bids == best_bid[choice]
            candidates = torch.where(is_top, bidder, torch.full_like(bidder, -1))
            winner = no_person.scatter_reduce(0, choice, candidates, reduce="amax")
            won = torch.nonzero(winner >= 0).squeeze(1)
            new_owner = winner[won]
            old_owner = owner[won]
            person_obj[old_owner[old_owner >= 0]] = -1
            owner[won] = new_owner
            person_obj[new_owner] = won
            prices[won] = best_bid[won]
        if eps <= eps_final:
            return person_obj[:k]
        eps = max(eps / _SCALE_FACTOR, eps_final)


def auction_lap(cost: torch.Tensor, maximize: bool = True, eps_final: float | None = None,
                max_rounds: int = DEFAULT_MAX_ROUNDS) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the rectangular assignment problem on ``cost`` with the forward auction algorithm.

    Parameters:
        cost: m x n matrix of any float dtype on any device; the auction runs on that device.
        maximize: maximise the total of the chosen entries (default) instead of minimising it.
        eps_final: final bid increment; the objective is within ``min(m, n) * eps_final`` of
            the optimum (``2 * min(m, n) * eps_final`` if m != n). None picks it from the costs
            (module docstring): exact for integer-valued costs, within 1e-6 * range otherwise.
        max_rounds: cap on bidding rounds over all phases. If it is reached the problem is solved
            by scipy's exact solver instead (a slow convergence must not give a wrong answer).
    Returns:
        (rows, cols): two int64 CPU tensors of length min(m, n); ``rows`` is sorted ascending and
        pair i assigns row ``rows[i]`` to column ``cols[i]`` (the form of the core's ``solve_lap``).
    Raises:
        AlignmentError: the matrix is not 2-D, holds NaN / inf, or eps_final is not positive.
    """
    if cost.ndim != 2:
        raise AlignmentError(f"cost matrix must be 2-D, got shape {tuple(cost.shape)}")
    if eps_final is not None and not eps_final > 0:
        raise AlignmentError(f"auction eps_final must be positive, got {eps_final}")
    m, n = cost.shape
    if m == 0 or n == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()
    benefit = cost.detach().to(torch.float64)
    if not bool(torch.isfinite(benefit).all()):
        raise AlignmentError("cost matrix contains NaN or inf (are the weights finite?)")
    if not maximize:
        benefit = -benefit
    transposed = m > n
    if transposed:
        benefit = benefit.t()
    k, size = benefit.shape
    benefit = benefit.contiguous()
    if k == 1:
        # One person: take its best object (no auction needed).
        person_obj: torch.Tensor | None = benefit[0].argmax().reshape(1)
    elif bool((benefit == benefit[0, 0]).all()):
        # Every assignment has the same objective.
        person_obj = torch.arange(k, device=benefit.device)
    else:
        eps = eps_final if eps_final is not None else _default_eps_final(benefit)
        person_obj = _auction(benefit, eps, max_rounds)
    if person_obj is None:
        # Not converged within max_rounds: fall back to the exact CPU solver rather than return
        # an assignment without a bound.
        from scipy.optimize import linear_sum_assignment
        rows_np, cols_np = linear_sum_assignment(
            cost.detach().to("cpu", torch.float64).numpy(), maximize=maximize)
        return (torch.as_tensor(rows_np, dtype=torch.long),
                torch.as_tensor(cols_np, dtype=torch.long))
    persons = torch.arange(k)
    objects = person_obj.to("cpu")
    if transposed:
        rows, cols = objects, persons
        order = torch.argsort(rows)
        return rows[order], cols[order]
    return persons, objects
