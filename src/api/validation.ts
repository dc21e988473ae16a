/**
 * The same checks the CRD schema makes at admission, for the controller and
 * the agent to make again: admission can be bypassed (a CRD installed without
 * its rules, an older CRD version, a direct etcd write), and the agent runs as
 * root. Each error names the field, like the apiserver's messages.
 */
import {
  ACTIONS,
  MAX_TIMEOUT_SECONDS,
  WAIT_MODES,
  type ModuleRequestSpec,
  type NodeModulesRequest,
} from './types.ts';

/**
 * request_module() formats the name into a MODULE_NAME_LEN buffer (64 - sizeof(unsigned long) = 56 on
 * 64-bit) and returns -ENAMETOOLONG when it does not fit with its NUL: 55 bytes of name at most.
 */
export const MAX_MODULE_NAME_BYTES = 55;
export const MAX_PARAMETERS = 64;
export const MAX_PARAMETER_BYTES = 1024;
/**
 * All parameters of one request together. Every targeted node gets its own copy (the controller
 * writes one per node), so 64 entries of 1 KiB over 5,000 nodes would be 320 MB in etcd, plus
 * its history. The CRDs cap the same total with CEL.
 */
export const MAX_TOTAL_PARAMETER_BYTES = 4096;

const PRINTABLE_ASCII = /^[!-~]+$/;
/** A parameter key: letters, digits, '_' and '-', not leading '-'. */
const PARAMETER_KEY = /^[A-Za-z0-9_][A-Za-z0-9_-]*$/;
/**
 * A parameter value: characters no POSIX shell treats specially anywhere in a word, and no
 * leading '-' (an option to whatever an install command runs). modprobe pastes every
 * command-line parameter into a node's `install` command at $CMDLINE_OPTS and runs that
 * line with system(): `;`, `$`, quotes, backslash, globs, `~`, `#`, whitespace and
 * control characters would all mean something to /bin/sh there. The CRDs use the same set.
 */
const PARAMETER_VALUE = /^([A-Za-z0-9_.,:+@%/=][A-Za-z0-9_.,:+@%/=-]*)?$/;
/** The value charset in words, for messages. */
export const PARAMETER_VALUE_CHARS = "letters, digits and _ . , : + @ % / = - (no leading '-')";
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_KEY =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** Returns the problem with a module name or modalias, or undefined when it is acceptable. */
export function moduleNameError(module: unknown, field = 'spec.module'): string | undefined {
  if (typeof module !== 'string' || module.length === 0) return `${field} is required`;
  const bytes = Buffer.byteLength(module, 'utf8');
  if (bytes > MAX_MODULE_NAME_BYTES) {
    return `${field} is ${bytes} bytes; at most ${MAX_MODULE_NAME_BYTES} are allowed (ENAMETOOLONG)`;
  }
  if (!PRINTABLE_ASCII.test(module)) {
    return `${field} must be printable ASCII with no whitespace or control characters`;
  }
  if (module.includes('/')) return `${field} must not contain '/'`;
  if (module.startsWith('-'))
    return `${field} must not start with '-' (it would be read as a modprobe option)`;
  return undefined;
}

/** Returns the problem with a parameter list, or undefined when it is acceptable. */
export function parametersError(parameters: unknown, field = 'spec.parameters'): string | undefined {
  if (parameters === undefined) return undefined;
  if (!Array.isArray(parameters)) return `${field} must be a list of key=value strings`;
  if (parameters.length > MAX_PARAMETERS)
    return `${field} has ${parameters.length} entries; at most ${MAX_PARAMETERS}`;
  let total = 0;
  for (const [i, p] of parameters.entries()) {
    if (typeof p !== 'string') return `${field}[${i}] must be a string`;
    total += Buffer.byteLength(p, 'utf8');
    if (p.length > MAX_PARAMETER_BYTES) return `${field}[${i}] is longer than ${MAX_PARAMETER_BYTES} bytes`;
    const eq = p.indexOf('=');
    if (eq < 0 || !PARAMETER_KEY.test(p.slice(0, eq))) {
      return `${field}[${i}] must be key=value with a key of letters, digits, '_' or '-' (not starting with '-')`;
    }
    if (!PARAMETER_VALUE.test(p.slice(eq + 1))) {
      return (
        `${field}[${i}] value may contain only ${PARAMETER_VALUE_CHARS}: ` +
        `modprobe pastes parameters into a node's install commands, where a shell would read anything else`
      );
    }
  }
  if (total > MAX_TOTAL_PARAMETER_BYTES) {
    return (
      `${field} holds ${total} bytes; at most ${MAX_TOTAL_PARAMETER_BYTES} are allowed in all ` +
      `(the entries' lengths added up): every targeted node gets a copy`
    );
  }
  return undefined;
}

/** Returns the problem with a node name, or undefined when it is acceptable. */
export function nodeNameError(nodeName: unknown, field = 'spec.nodeName'): string | undefined {
  if (typeof nodeName !== 'string' || nodeName.length === 0) return `${field} is required`;
  if (nodeName.length > 253 || !DNS_SUBDOMAIN.test(nodeName)) {
    return `${field} must be a valid node name (RFC 1123 subdomain, lowercase)`;
  }
  return undefined;
}

function waitAndTimeoutError(spec: { wait?: unknown; timeoutSeconds?: unknown }): string | undefined {
  if (spec.wait !== undefined && !WAIT_MODES.includes(spec.wait as never)) {
    return `spec.wait must be one of ${WAIT_MODES.join(', ')}`;
  }
  const t = spec.timeoutSeconds;
  if (
    t !== undefined &&
    (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > MAX_TIMEOUT_SECONDS)
  ) {
    return `spec.timeoutSeconds must be a whole number from 1 to ${MAX_TIMEOUT_SECONDS}`;
  }
  return undefined;
}

const REQUEST_FIELDS: ReadonlySet<string> = new Set([
  'module',
  'action',
  'parameters',
  'nodeName',
  'nodeSelector',
  'wait',
  'timeoutSeconds',
  'dryRun',
]);
const ENTRY_FIELDS: ReadonlySet<string> = new Set([
  'name',
  'uid',
  'created',
  'generation',
  'module',
  'action',
  'parameters',
  'wait',
  'timeoutSeconds',
  'dryRun',
  'action',
]);

/**
 * A field the schema does not know: the apiserver prunes or refuses these, so one that reaches
 * us came past a CRD without its schema, and may mean something to a newer agent than us.
 */
function unknownFieldError(
  spec: object,
  known: ReadonlySet<string>,
  kind: string,
  prefix = 'spec',
): string | undefined {
  const unknown = Object.keys(spec).find((k) => !known.has(k));
  return unknown === undefined ? undefined : `${prefix}.${unknown} is not a field of ${kind}`;
}

/** Validates a ModuleRequest spec; returns the first problem found, or undefined. */
export function validateRequestSpec(spec: ModuleRequestSpec | undefined): string | undefined {
  if (!spec || typeof spec !== 'object') return 'spec is required';
  const unknown = unknownFieldError(spec, REQUEST_FIELDS, 'ModuleRequest');
  if (unknown) return unknown;
  const hasName = spec.nodeName !== undefined;
  const hasSelector = spec.nodeSelector !== undefined;
  if (hasName === hasSelector) return 'exactly one of spec.nodeName or spec.nodeSelector must be set';
  if (hasName) {
    const e = nodeNameError(spec.nodeName);
    if (e) return e;
  } else {
    const sel = spec.nodeSelector;
    if (typeof sel !== 'object' || sel === null || Array.isArray(sel))
      return 'spec.nodeSelector must be a map';
    for (const [k, v] of Object.entries(sel)) {
      if (!LABEL_KEY.test(k)) return `spec.nodeSelector key "${k}" is not a valid label key`;
      if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v)) {
        return `spec.nodeSelector["${k}"] is not a valid label value`;
      }
    }
  }
  return (
    moduleNameError(spec.module) ??
    actionError(spec) ??
    parametersError(spec.parameters) ??
    waitAndTimeoutError(spec) ??
    dryRunError(spec.dryRun)
  );
}

/** Returns the problem with spec.action (and parameters given to a Remove), or undefined. */
export function actionError(spec: { action?: unknown; parameters?: unknown }): string | undefined {
  if (spec.action === undefined) return undefined;
  if (!ACTIONS.includes(spec.action as never)) return `spec.action must be one of ${ACTIONS.join(', ')}`;
  if (spec.action === 'Remove' && Array.isArray(spec.parameters) && spec.parameters.length > 0)
    return 'spec.parameters must be empty when spec.action is Remove (modprobe -r takes no module parameters)';
  return undefined;
}

function dryRunError(dryRun: unknown): string | undefined {
  return dryRun === undefined || typeof dryRun === 'boolean'
    ? undefined
    : 'spec.dryRun must be true or false';
}

/**
 * Validates one entry of a node's NodeModules spec (the agent's last check before exec); returns
 * the first problem, naming the field as `spec.requests[NAME].FIELD`, or undefined.
 */
export function validateEntry(entry: NodeModulesRequest | undefined): string | undefined {
  if (!entry || typeof entry !== 'object') return 'spec.requests[]: entry is required';
  const at = `spec.requests[${typeof entry.name === 'string' ? entry.name : '?'}]`;
  const unknown = unknownFieldError(entry, ENTRY_FIELDS, 'a NodeModules request', at);
  if (unknown) return unknown;
  if (typeof entry.uid !== 'string' || entry.uid === '') return `${at}.uid is required`;
  if (!Number.isInteger(entry.generation) || entry.generation < 1)
    return `${at}.generation must be a whole number >= 1`;
  // The agent uses these as they are: an entry (unlike a request) carries them explicitly.
  if (entry.wait === undefined) return `${at}.wait is required`;
  if (entry.timeoutSeconds === undefined) return `${at}.timeoutSeconds is required`;
  const problem =
    moduleNameError(entry.module) ??
    actionError(entry) ??
    parametersError(entry.parameters) ??
    waitAndTimeoutError(entry) ??
    dryRunError(entry.dryRun);
  return problem && `${at}: ${problem}`;
}

/** Why `key` is not a valid label key (`[prefix/]name`), naming `field`; undefined when it is. */
export function labelKeyError(key: unknown, field: string): string | undefined {
  if (typeof key !== 'string' || !LABEL_KEY.test(key)) {
    return `${field}: ${JSON.stringify(key)} is not a valid label key ([DNS-subdomain/]name, name at most 63 characters)`;
  }
  return undefined;
}
