import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { demoResolver, prepareDemoHelper } from '../local/demo.ts';
import {
  configFingerprint,
  configPathsOf,
  findConfigLine,
  findInstallLine,
  modulesDirOf,
  moduleNameOfPath,
  parseShowConfig,
  parseShowDepends,
  readNodeConfig,
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
const config = await readNodeConfig(resolver);

test('the real modprobe resolves dependencies, in load order', async () => {
  const r = await resolveModule(resolver, 'demo_net', config);
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
    const r = await resolveModule(resolver, asked, config);
    assert.ok(r.ok, `${asked}: ${JSON.stringify(r)}`);
    assert.deepEqual(r.targets, [target], asked);
  }
});

test('softdeps and install commands are in the set; the install command is not run', async () => {
  const r = await resolveModule(resolver, 'demo_pci', config);
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(
    r.modules.map((m) => `${m.how}:${m.name}`),
    ['insmod:demo_core', 'install:demo_fs', 'insmod:demo_pci', 'insmod:demo_core', 'insmod:demo_net'],
  );
  assert.match(r.modules[1]?.command ?? '', /^\/bin\/touch .*install-ran \$CMDLINE_OPTS/);
  assert.equal(existsSync(marker), false, 'resolution ran the install command');
});

test('an unknown module is a failed resolution naming it, never a throw', async () => {
  const r = await resolveModule(resolver, 'no_such_module', config);
  assert.equal(r.ok, false);
  assert.match(r.ok ? '' : r.error, /no_such_module not found/);
  const missing = await resolveModule({ modprobe: join(dir, 'nope'), args: [] }, 'x', config);
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
  const parsed = parseShowConfig(
    'blacklist evbug\nblacklist usb-mouse\nalias a b\n' +
      'install mlx4_core /sbin/modprobe --ignore-install mlx4_core $CMDLINE_OPTS && x\n' +
      'remove mlx4_core /sbin/modprobe -r --ignore-remove mlx4_core\n' +
      '# End of configuration files. Dumping indexes now:\ninstall not_config y\nblacklist not_config\n',
  );
  assert.deepEqual(
    [...parsed.installs],
    [['mlx4_core', '/sbin/modprobe --ignore-install mlx4_core $CMDLINE_OPTS && x']],
  );
  assert.deepEqual([...parsed.removes], [['mlx4_core', '/sbin/modprobe -r --ignore-remove mlx4_core']]);
  assert.deepEqual([...parsed.blacklist], ['evbug', 'usb_mouse']);
  assert.deepEqual(
    parseShowDepends(
      'builtin crc32c\ninstall /sbin/modprobe --ignore-install mlx4_core $CMDLINE_OPTS && x debug=1\ninsmod /m/after.ko\n',
      ['mlx4_core'],
      parsed.installs,
    ).map((m) => `${m.how}:${m.name}:${m.target}`),
    ['builtin:crc32c:mlx4_core', 'install:mlx4_core:mlx4_core', 'insmod:after:mlx4_core'],
  );
  // Each module belongs to the next target printed at or after it.
  assert.deepEqual(
    parseShowDepends(
      'insmod /m/a.ko\ninsmod /m/t1.ko\ninsmod /m/b.ko\ninsmod /m/t2.ko\n',
      ['t1', 't2'],
      new Map(),
    ).map((m) => `${m.name}:${m.target}`),
    ['a:t1', 't1:t1', 'b:t2', 't2:t2'],
  );
  assert.throws(() => parseShowDepends('surprise\n', ['t'], parsed.installs), /unexpected line/);
  // An install command the configuration does not have: the configuration changed; fail closed.
  assert.throws(
    () => parseShowDepends('install /bin/other\n', ['t'], parsed.installs),
    /no module of the node/,
  );
  assert.deepEqual(configPathsOf(['-d', '/r', '--config=/a', '-C', '/b', '-C/c']), ['/a', '/b', '/c']);
  assert.ok(configPathsOf([]).includes('/etc/modprobe.d'));
  assert.equal(modulesDirOf(['-d', '/r', '-S', '6.1'], 'x'), '/r/lib/modules/6.1');
  assert.equal(modulesDirOf(['--dirname=/r', '--set-version=6.2'], 'x'), '/r/lib/modules/6.2');
  assert.equal(modulesDirOf(['-C', '/c'], '6.1.0-9-amd64'), '/lib/modules/6.1.0-9-amd64');
});

test('the configuration part of modprobe -c is read, the indexes after it are not', async () => {
  assert.deepEqual([...config.installs.keys()], ['demo_fs']);
  assert.deepEqual([...config.blacklist], []);
  // A fake modprobe that prints the configuration, the marker, then an endless index dump.
  const fake = join(dir, 'endless-modprobe');
  writeFileSync(
    fake,
    '#!/bin/sh\necho "blacklist x"\necho "# End of configuration files. Dumping indexes now:"\nexec yes "alias pci:v* y"\n',
  );
  chmodSync(fake, 0o755);
  const c = await readNodeConfig({ modprobe: fake, args: [] });
  assert.deepEqual([...c.blacklist], ['x']);
  await assert.rejects(readNodeConfig({ modprobe: join(dir, 'nope'), args: [] }), /ENOENT/);
});

test('the fingerprint changes with a config file and with the module indexes', () => {
  const before = configFingerprint(resolver.args);
  assert.equal(configFingerprint(resolver.args), before);
  writeFileSync(join(conf, 'new.conf'), 'blacklist demo_fs\n');
  const added = configFingerprint(resolver.args);
  assert.notEqual(added, before);
  rmSync(join(conf, 'new.conf'));
  assert.notEqual(configFingerprint(resolver.args), added);
  const settled = configFingerprint(resolver.args);
  const dep = join(dir, 'demo/lib/modules', '6.0.0-kmod-demo', 'modules.dep');
  writeFileSync(dep, readFileSync(dep, 'utf8') + '\n');
  assert.notEqual(configFingerprint(resolver.args), settled);
});

test('a config line is found in the file kmod reads it from, for any verb', () => {
  writeFileSync(join(conf, 'bl.conf'), '# hardening\nblacklist  demo-net\n');
  try {
    assert.deepEqual(findConfigLine(configPathsOf(resolver.args), 'blacklist', 'demo_net'), {
      file: join(conf, 'bl.conf'),
      line: 'blacklist  demo-net',
    });
    assert.equal(findConfigLine(configPathsOf(resolver.args), 'blacklist', 'demo_fs'), undefined);
  } finally {
    rmSync(join(conf, 'bl.conf'));
  }
});
