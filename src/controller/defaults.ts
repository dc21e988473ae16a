/**
 * The controller's defaults that its flags name (src/cli/main.ts): here, not in
 * controller.ts, so that printing the help does not load the controller.
 */

/** Parallel reconciles of distinct requests (`--concurrency`). */
export const DEFAULT_CONCURRENCY = 4;

/**
 * Parallel reconciles of distinct nodes, i.e. NodeModules spec writes in flight at once
 * (`--node-concurrency`). 50: N nodes take about N / 50 round trips instead of N (a 1,000-node
 * fan-out had every node's object written after 5.0–6.3 s, against 8.6 s at 16; bench/RESULTS.md),
 * and a big fan-out still holds a quarter of the API server's default mutating in-flight limit
 * (200), so it never starves everyone else, the agents' status writes included.
 */
export const DEFAULT_NODE_CONCURRENCY = 50;
