/** In-process controller and agents for tests (silent logs, own metric registries). */
import type { KubeConfig } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { Agent, type AgentOptions } from '../../src/agent/agent.ts';
import { Controller } from '../../src/controller/controller.ts';
import { createLogger, silentLogger } from '../../src/observability/logger.ts';

/** Logs go nowhere unless TEST_LOG_LEVEL is set (e.g. TEST_LOG_LEVEL=debug to debug a test). */
const testLogger = (component: string) =>
  process.env.TEST_LOG_LEVEL ? createLogger(component, process.env.TEST_LOG_LEVEL) : silentLogger();

export function startController(kc: KubeConfig): Promise<Controller> {
  const c = new Controller({ kc, logger: testLogger('controller'), registry: new Registry(), resyncMs: 0 });
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
