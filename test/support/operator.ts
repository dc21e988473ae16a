/** In-process controller and agents for tests (silent logs, own metric registries). */
import type { KubeConfig } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { Agent, type AgentOptions } from '../../src/agent/agent.ts';
import { Controller } from '../../src/controller/controller.ts';
import { silentLogger } from '../../src/observability/logger.ts';

export function startController(kc: KubeConfig): Promise<Controller> {
  const c = new Controller({ kc, logger: silentLogger(), registry: new Registry(), resyncMs: 0 });
  return c.start().then(() => c);
}

export async function startAgent(kc: KubeConfig, nodeName: string, helperPath: string, extra: Partial<AgentOptions> = {}): Promise<Agent> {
  const a = new Agent({ kc, nodeName, helperPath, logger: silentLogger(), registry: new Registry(), bootIdSource: 'node', ...extra });
  await a.start();
  return a;
}

