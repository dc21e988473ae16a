import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { RE2JS } from 're2js';
import { staleCopies } from '../../scripts/deny-list.ts';
import {
  denyPattern,
  denyTable,
  readDenyList,
  readmeTable,
  tableRows,
  withDenyInDeploy,
  withReadmeTable,
} from './denylist.ts';
import { normalizeModuleName } from './modulepolicy.ts';

const entries = readDenyList();
const deny = RE2JS.compile(denyPattern(entries));
const denied = (name: string) => deny.matcher(normalizeModuleName(name)).find();

test('every name the list shows is denied by its own entry and by the whole pattern', () => {
  assert.ok(entries.length >= 25);
  for (const e of entries) {
    const own = RE2JS.compile(`^(${e.pattern})$`);
    for (const name of e.names) {
      assert.ok(own.matcher(normalizeModuleName(name)).find(), `${name} by ${e.pattern}`);
      assert.ok(denied(name), name);
    }
  }
});

test('the modules of issue 18 are denied, each entry with CVEs where the issue named them', () => {
  for (const [name, cve] of [
    ['n_gsm', 'CVE-2023-6546'],
    ['tty-ldisc-21', 'CVE-2023-6546'],
    ['cls_route', 'CVE-2022-2588'],
    ['cls_tcindex', 'CVE-2023-1829'],
    ['cls_rsvp', 'CVE-2023-42755'],
    ['kcm', 'CVE-2024-44946'],
    ['rxrpc', 'CVE-2023-2006'],
    ['vivid', 'CVE-2019-18683'],
  ] as const) {
    assert.ok(denied(name), name);
    const entry = entries.find((e) =>
      RE2JS.compile(`^(${e.pattern})$`).matcher(normalizeModuleName(name)).find(),
    );
    assert.ok(entry?.cves.includes(cve), `${name}: ${entry?.cves.join(', ')}`);
  }
});

test('nothing the list denied before issue 18 is allowed now', () => {
  const before = RE2JS.compile(
    '^(symbol:.*|(fs_)?(cramfs|freevxfs|vxfs|jffs2|hfs|hfsplus|udf)|dccp(_ipv4|_ipv6|_diag)?|sctp(_diag)?|rds(_tcp|_rdma)?|tipc(_diag)?|n_hdlc|ax25|netrom|x25|rose|decnet|econet|af_802154|ipx|appletalk|psnap|p8023|p8022|can|atm|net_pf_(3|4|5|6|8|9|11|12|19|20|21|29|30|36)(_.*)?|net_pf_(2|10)_proto_(33|132)(_.*)?|net_pf_16_proto_4_type_((2|10)_(33|132)|30)|tty_ldisc_13)$',
  );
  const probes = [
    'symbol:x',
    ...['cramfs', 'freevxfs', 'vxfs', 'jffs2', 'hfs', 'hfsplus', 'udf'].flatMap((f) => [f, `fs_${f}`]),
    ...['dccp', 'dccp_ipv4', 'dccp_ipv6', 'dccp_diag', 'sctp', 'sctp_diag', 'rds', 'rds_tcp', 'rds_rdma'],
    ...['tipc', 'tipc_diag', 'n_hdlc', 'ax25', 'netrom', 'x25', 'rose', 'decnet', 'econet', 'af_802154'],
    ...['ipx', 'appletalk', 'psnap', 'p8023', 'p8022', 'can', 'atm', 'tty_ldisc_13'],
    ...Array.from({ length: 46 }, (_, n) => [`net_pf_${n}`, `net_pf_${n}_proto_2`]).flat(),
    ...['2', '10'].flatMap((f) => ['33', '132'].map((p) => `net_pf_${f}_proto_${p}`)),
    ...['2', '10'].flatMap((f) => ['33', '132'].map((p) => `net_pf_16_proto_4_type_${f}_${p}`)),
    'net_pf_16_proto_4_type_30',
  ];
  for (const p of probes) if (before.matcher(p).find()) assert.ok(denied(p), `${p} was denied before`);
});

test('what a node commonly needs stays allowed', () => {
  for (const name of [
    'br_netfilter',
    'overlay',
    'ip_vs',
    'nf_tables',
    'nf_conntrack',
    'vxlan',
    'wireguard',
    'cls_u32',
    'sch_htb',
    'nvidia_uvm',
    'snd-hda-intel',
    'fs-ext4',
    'fs-xfs',
    'net-pf-10',
    'net-pf-16',
    'net-pf-17',
    'sctp_foo',
    'canbus_thing',
  ])
    assert.equal(denied(name), false, name);
});

test('deploy/40-module-policy.yaml and the README table are generated from the list (scripts/deny-list.ts)', () => {
  assert.deepEqual(staleCopies(), []);
  // And the check can fail: a changed pattern or row is seen.
  const root = resolve(import.meta.dirname, '../..');
  const deploy = readFileSync(resolve(root, 'deploy/40-module-policy.yaml'), 'utf8');
  const changed = withDenyInDeploy(deploy, '^(only)$');
  assert.notEqual(changed, deploy);
  assert.match(changed, /^ {2}deny: '\^\(only\)\$'$/m);
  assert.match(changed, /"deny":"\^\(only\)\$"/);
  const readme = readFileSync(resolve(root, 'README.md'), 'utf8');
  assert.deepEqual(tableRows(readmeTable(readme)), tableRows(denyTable(entries)));
  const fewer = withReadmeTable(readme, denyTable(entries.slice(1)));
  assert.notDeepEqual(tableRows(readmeTable(fewer)), tableRows(denyTable(entries)));
});
