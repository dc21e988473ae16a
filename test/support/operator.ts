/** In-process controller and agents for tests (silent logs, own metric registries). */
import type { KubeConfig } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { Agent, type AgentOptions } from '../../src/agent/agent.ts';
import { Controller, type ControllerOptions } from '../../src/controller/controller.ts';
import { createLogger, silentLogger } from '../../src/observability/logger.ts';

/** Logs go nowhere unless TEST_LOG_LEVEL is set (e.g. TEST_LOG_LEVEL=debug to debug a test). */
const testLogger = (component: string) =>
  process.env.TEST_LOG_LEVEL ? createLogger(component, process.env.TEST_LOG_LEVEL) : silentLogger();

/** A started controller; `extra` overrides the test defaults (e.g. a registry to read its metrics). */
export function startController(kc: KubeConfig, extra: Partial<ControllerOptions> = {}): Promise<Controller> {
  const c = new Controller({
    kc,
    logger: testLogger('controller'),
    registry: new Registry(),
    ...extra,
    tuning: { resyncMs: 0, ...extra.tuning },
  });
  return c.start().then(() => c);
}

export async function startAgent(
  kc: KubeConfig,
  nodeName: string,
  helperPath: string,
  extra: Partial<AgentOptions> = {},
): Promise<Agent> {
  const a = new Agent({
    kc,
    nodeName,
    helperPath,
    logger: testLogger('agent'),
    registry: new Registry(),
    bootIdSource: 'node',
    ...extra,
  });
  await a.start();
  return a;
}

/**
 * The current value of an unlabelled metric in `registry` (gauges with a
 * collect function are collected). Tests wait on these instead of sleeping:
 * e.g. kmod_agent_helper_state_waiters says how many runs an agent holds at
 * its gate, so "nothing ran while Disabled" is checked once all are held.
 */
export async function metricValue(registry: Registry, name: string): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name} in the registry`);
  const value = (await metric.get()).values[0]?.value;
  if (value === undefined) throw new Error(`metric ${name} has no value`);
  return value;
}

/** The sum of a metric's values over all its labels in `registry` (e.g. reconciles of every result). */
export async function metricSum(registry: Registry, name: string): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name} in the registry`);
  return (await metric.get()).values.reduce((sum, v) => sum + v.value, 0);
}

/** The value of an unlabelled metric scraped from a /metrics endpoint on 127.0.0.1:`port`. */
export async function scrapeMetric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m?.[1]) throw new Error(`no metric ${name} at 127.0.0.1:${port}/metrics`);
  return Number(m[1]);
}
