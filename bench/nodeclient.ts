/**
 * A simulated node's own client (bench/agents.ts, bench/floor-agents.ts): its own KubeConfig and
 * connection pool (src/kube/connections.ts), as a node's agent process has. Nodes are separate
 * machines; simulated nodes sharing one client would share its HTTP/2 sessions, which no two real
 * nodes do (bench/RESULTS.md).
 */
import { KubeConfig } from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { reuseConnections } from '../src/kube/connections.ts';

/** Reads the kubeconfig at `path` once; each call of the returned function builds a new node's client. */
export function nodeClients(path: string): () => KubeConfig {
  const kubeconfig = readFileSync(path, 'utf8');
  return () => {
    const kc = new KubeConfig();
    kc.loadFromString(kubeconfig);
    reuseConnections(kc);
    return kc;
  };
}
