/**
 * The controller's defaults that its flags name (src/cli/main.ts): here, not in
 * controller.ts, so that printing the help does not load the controller.
 */

/** Parallel reconciles of distinct requests (`--concurrency`). */
export const DEFAULT_CONCURRENCY = 4;

/**
 * Parallel reconciles of distinct nodes, i.e. NodeModules spec writes in flight at once
 * (`--node-concurrency`). 16: a big fan-out stays well under the API server's default mutating
 * in-flight limit (200), so it never starves everyone else (the agents' status writes included),
 * while N nodes take about N / 16 round trips instead of N.
 */
export const DEFAULT_NODE_CONCURRENCY = 16;
