import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { demoResolver, prepareDemoHelper } from '../local/demo.ts';
import {
  configPathsOf,
  findInstallLine,
  moduleNameOfPath,
  parseInstallCommands,
  parseShowDepends,
  resolveModule,
  type Resolver,
} from './resolve.ts';

const dir = mkdtempSync(join(tmpdir(), 'kmod-resolve-test-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
prepareDemoHelper(join(dir, 'demo'));
// A node's modprobe.d: an install line that would create a file if it ever ran, a softdep, an alias.
const marker = join(dir, 'install-ran');
const conf = join(dir, 'modprobe.d');
mkdirSync(conf);
writeFileSync(
  join(conf, 'rdma.conf'),
  `install demo_fs /bin/touch ${marker} $CMDLINE_OPTS\nsoftdep demo_pci pre: demo_fs post: demo_net\n`,
);
writeFileSync(join(conf, 'alias.conf'), 'alias my-alias demo_net\n');
const base = demoResolver(join(dir, 'demo'));
const resolver: Resolver = { modprobe: base.modprobe, args: [...base.args, '-C', conf] };

test('the real modprobe resolves dependencies, in load order', async () => {
  const r = await resolveModule(resolver, 'demo_net');
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(r.targets, ['demo_net']);
  assert.deepEqual(
    r.modules.map((m) => [m.name, m.target, m.how]),
    [
      ['demo_core', 'demo_net', 'insmod'],
      ['demo_net', 'demo_net', 'insmod'],
    ],
  );
});

test('aliases (modalias, config alias, symbol:) resolve to their targets', async () => {
  for (const [asked, target] of [
    ['net-pf-99', 'demo_net'],
    ['my-alias', 'demo_net'],
    ['pci:v00008086d00001234sv00000000sd00000000bc02sc00i00', 'demo_pci'],
    ['symbol:demo_core_hello', 'demo_core'],
    ['demo-core', 'demo_core'],
  ] as const) {
    const r = await resolveModule(resolver, asked);
    assert.ok(r.ok, `${asked}: ${JSON.stringify(r)}`);
    assert.deepEqual(r.targets, [target], asked);
  }
});

test('softdeps and install commands are in the set; the install command is not run', async () => {
  const r = await resolveModule(resolver, 'demo_pci');
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(
    r.modules.map((m) => `${m.how}:${m.name}`),
    ['insmod:demo_core', 'install:demo_fs', 'insmod:demo_pci', 'insmod:demo_core', 'insmod:demo_net'],
  );
  assert.match(r.modules[1]?.command ?? '', /^\/bin\/touch .*install-ran \$CMDLINE_OPTS/);
  assert.equal(existsSync(marker), false, 'resolution ran the install command');
});

test('an unknown module is a failed resolution naming it, never a throw', async () => {
  const r = await resolveModule(resolver, 'no_such_module');
  assert.equal(r.ok, false);
  assert.match(r.ok ? '' : r.error, /no_such_module not found/);
  const missing = await resolveModule({ modprobe: join(dir, 'nope'), args: [] }, 'x');
  assert.equal(missing.ok, false);
});

test('the install line is found in the file kmod reads it from', () => {
  assert.deepEqual(findInstallLine(configPathsOf(resolver.args), 'demo-fs'), {
    file: join(conf, 'rdma.conf'),
    line: `install demo_fs /bin/touch ${marker} $CMDLINE_OPTS`,
  });
  assert.equal(findInstallLine([conf], 'demo_net'), undefined);
  // The first directory holding a file name wins, as in kmod.
  const etc = join(dir, 'etc');
  mkdirSync(etc);
  writeFileSync(join(etc, 'rdma.conf'), '# emptied by the admin\n');
  assert.equal(findInstallLine([etc, conf], 'demo_fs'), undefined);
});

test('parsers: paths, -c output, show-depends lines', () => {
  assert.equal(moduleNameOfPath('/lib/modules/6/kernel/net/sctp/sctp-diag.ko.zst'), 'sctp_diag');
  assert.equal(moduleNameOfPath('/x/dccp.ko'), 'dccp');
  const installs = parseInstallCommands(
    'alias a b\ninstall mlx4_core /sbin/modprobe --ignore-install mlx4_core $CMDLINE_OPTS && x\n' +
      '# End of configuration files. Dumping indexes now:\ninstall not_config y\n',
  );
  assert.deepEqual(
    [...installs],
    [['mlx4_core', '/sbin/modprobe --ignore-install mlx4_core $CMDLINE_OPTS && x']],
  );
  assert.deepEqual(
    parseShowDepends(
      'builtin crc32c\ninstall /sbin/modprobe --ignore-install mlx4_core $CMDLINE_OPTS && x debug=1\n',
      'mlx4_core',
      installs,
    ).map((m) => `${m.how}:${m.name}`),
    ['builtin:crc32c', 'install:mlx4_core'],
  );
  assert.throws(() => parseShowDepends('surprise\n', 't', installs), /unexpected line/);
  assert.deepEqual(configPathsOf(['-d', '/r', '--config=/a', '-C', '/b', '-C/c']), ['/a', '/b', '/c']);
  assert.ok(configPathsOf([]).includes('/etc/modprobe.d'));
});
