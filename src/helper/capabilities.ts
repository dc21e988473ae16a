/**
 * Capability names and masks: the small pure vocabulary behind the kernel's
 * `usermodehelper/bset` and `usermodehelper/inheritable` sysctls.
 *
 * The kernel keeps those two masks as `kernel_cap_t` and only ever
 * intersects them: with the helper's inherited sets when it starts
 * (call_usermodehelper_exec_async: `cap_intersect(usermodehelper_bset,
 * new->cap_bset)`), and with a new value when an admin writes the sysctl
 * (proc_cap_handler: "Drop everything not in the new_cap (but don't add
 * things)"). The agent does the same with these helpers; masks are `bigint`
 * bit sets, bit N being capability N, exactly as /proc/PID/status prints them.
 */
import { readFileSync } from 'node:fs';

/**
 * Capability names by number (include/uapi/linux/capability.h, up to
 * CAP_CHECKPOINT_RESTORE = 40, the last one as of Linux 6.x).
 */
export const CAPABILITY_NAMES: readonly string[] = [
  'cap_chown',
  'cap_dac_override',
  'cap_dac_read_search',
  'cap_fowner',
  'cap_fsetid',
  'cap_kill',
  'cap_setgid',
  'cap_setuid',
  'cap_setpcap',
  'cap_linux_immutable',
  'cap_net_bind_service',
  'cap_net_broadcast',
  'cap_net_admin',
  'cap_net_raw',
  'cap_ipc_lock',
  'cap_ipc_owner',
  'cap_sys_module',
  'cap_sys_rawio',
  'cap_sys_chroot',
  'cap_sys_ptrace',
  'cap_sys_pacct',
  'cap_sys_admin',
  'cap_sys_boot',
  'cap_sys_nice',
  'cap_sys_resource',
  'cap_sys_time',
  'cap_sys_tty_config',
  'cap_mknod',
  'cap_lease',
  'cap_audit_write',
  'cap_audit_control',
  'cap_setfcap',
  'cap_mac_override',
  'cap_mac_admin',
  'cap_syslog',
  'cap_wake_alarm',
  'cap_block_suspend',
  'cap_audit_read',
  'cap_perfmon',
  'cap_bpf',
  'cap_checkpoint_restore',
];

/** Capability bit numbers fit in 64 bits (the kernel's kernel_cap_t is a u64). */
const MAX_CAP_BIT = 63;
const ALL_BITS = (1n << BigInt(MAX_CAP_BIT + 1)) - 1n;

/** The helper's default bounding set: CAP_SYS_MODULE only, all modprobe needs. */
export const DEFAULT_BOUNDING_CAPS: readonly string[] = ['cap_sys_module'];
/** The helper's default inheritable set: empty. */
export const DEFAULT_INHERITABLE_CAPS: readonly string[] = [];

/** A process's five capability sets, as /proc/PID/status reports them. */
export interface ProcessCaps {
  readonly inheritable: bigint;
  readonly permitted: bigint;
  readonly effective: bigint;
  readonly bounding: bigint;
  readonly ambient: bigint;
}

/**
 * Parses a capability mask as /proc/PID/status prints it (`000001ffffffffff`,
 * 16 hex digits; shorter is accepted). Throws on anything else.
 */
export function parseCapMask(hex: string): bigint {
  const text = hex.trim();
  if (!/^[0-9a-fA-F]{1,16}$/.test(text)) {
    throw new Error(`invalid capability mask ${JSON.stringify(hex)}: expected up to 16 hex digits`);
  }
  return BigInt(`0x${text}`);
}

/** Formats a mask the way /proc/PID/status does: 16 lower-case hex digits. */
export function formatCapMask(mask: bigint): string {
  return (mask & ALL_BITS).toString(16).padStart(16, '0');
}

/**
 * Turns capability names into a mask. Accepts `cap_sys_module`,
 * `CAP_SYS_MODULE` and `sys_module`, and `cap_N` for a bare bit number (the
 * form capNamesFromMask uses for bits this table has no name for). Throws on
 * an unknown name, naming it: a typo in a mask must never silently widen or
 * narrow it.
 */
export function capMaskFromNames(names: Iterable<string>): bigint {
  let mask = 0n;
  for (const raw of names) {
    mask |= 1n << BigInt(capBit(raw));
  }
  return mask;
}

/**
 * Parses a comma-separated capability list (`cap_sys_module,net_admin`; case
 * and the `cap_` prefix optional, blanks ignored) into lower-case names.
 * Throws naming `field` and the unknown name. The one parser of the CLI flags
 * and the agent config ConfigMap.
 */
export function parseCapList(field: string, value: string): string[] {
  const names = value
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  try {
    capMaskFromNames(names);
  } catch (err) {
    throw new Error(`${field}: ${(err as Error).message}`, { cause: err });
  }
  return names;
}

function capBit(raw: string): number {
  const lower = raw.trim().toLowerCase();
  const name = lower.startsWith('cap_') ? lower : `cap_${lower}`;
  const known = CAPABILITY_NAMES.indexOf(name);
  if (known >= 0) return known;
  const numeric = /^cap_(\d{1,2})$/.exec(name);
  if (numeric?.[1] !== undefined && Number(numeric[1]) <= MAX_CAP_BIT) return Number(numeric[1]);
  throw new Error(`unknown capability ${JSON.stringify(raw)}`);
}

/**
 * Lists the capabilities in a mask, lowest bit first, as `cap_*` names.
 * Bits without a name in CAPABILITY_NAMES (a kernel newer than this table)
 * come out as `cap_N`, which capMaskFromNames and setpriv both accept.
 */
export function capNamesFromMask(mask: bigint): string[] {
  const names: string[] = [];
  for (let bit = 0; bit <= MAX_CAP_BIT; bit++) {
    if ((mask >> BigInt(bit)) & 1n) names.push(CAPABILITY_NAMES[bit] ?? `cap_${bit}`);
  }
  return names;
}

/** The kernel's cap_intersect(): the capabilities present in both masks. */
export function intersectCaps(a: bigint, b: bigint): bigint {
  return a & b;
}

/**
 * What `proposed` would add to `current`, as names; empty when `proposed`
 * only narrows (or keeps) it. The agent refuses a runtime mask change when
 * this is not empty: like the sysctl, masks can only narrow until restart.
 */
export function capsAdded(current: bigint, proposed: bigint): string[] {
  return capNamesFromMask(proposed & ~current);
}

/**
 * Formats a mask as a setpriv `--bounding-set` / `--inh-caps` /
 * `--ambient-caps` argument that sets the set to exactly `mask`:
 * `-all` then one `+cap_N` per bit. Bits are given by number, not by name,
 * so the result does not depend on which names the installed libcap-ng
 * knows. Callers must pass a subset of the current set: setpriv silently
 * ignores additions the kernel refuses (a bounding-set "+cap" is never
 * possible), so the mask has to be intersected beforehand.
 */
export function setprivCapList(mask: bigint): string {
  const parts = ['-all'];
  for (let bit = 0; bit <= MAX_CAP_BIT; bit++) {
    if ((mask >> BigInt(bit)) & 1n) parts.push(`+cap_${bit}`);
  }
  return parts.join(',');
}

/**
 * Extracts the capability sets from the text of /proc/PID/status. Throws if
 * one of the five lines is missing (a kernel without ambient capabilities,
 * before 4.3, is not supported).
 */
export function parseStatusCaps(statusText: string): ProcessCaps {
  const field = (name: string): bigint => {
    const match = new RegExp(`^${name}:\\s*([0-9a-fA-F]+)\\s*$`, 'm').exec(statusText);
    if (match?.[1] === undefined) throw new Error(`/proc status has no ${name} line`);
    return parseCapMask(match[1]);
  };
  return {
    inheritable: field('CapInh'),
    permitted: field('CapPrm'),
    effective: field('CapEff'),
    bounding: field('CapBnd'),
    ambient: field('CapAmb'),
  };
}

/** Reads this process's own capability sets from /proc/self/status. */
export function readOwnCaps(): ProcessCaps {
  return parseStatusCaps(readFileSync('/proc/self/status', 'utf8'));
}
