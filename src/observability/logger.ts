/**
 * Structured JSON logs (winston). Every line is one JSON object with a
 * timestamp, level, component and message; callers add request, node, module
 * and attempt as fields via `child()`, so a log pipeline can follow one
 * request across controller and agents.
 */
import winston from 'winston';

export type Logger = winston.Logger;

/** Creates the process logger. `level` defaults to LOG_LEVEL or "info". */
export function createLogger(component: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  // winston formats every message before its transport compares levels, so a debug line at
  // LOG_LEVEL=warn was timestamped and serialized, then dropped. Dropping it first costs nothing.
  const enabled = winston.format((info) => (logger.isLevelEnabled(info.level) ? info : false));
  const logger: Logger = winston.createLogger({
    level,
    defaultMeta: { component },
    format: winston.format.combine(
      enabled(),
      winston.format.timestamp(),
      winston.format.errors({ stack: false }),
      winston.format.json(),
    ),
    // stderr: stdout stays free for a command's own output (e.g. `local` prints status tables).
    transports: [new winston.transports.Console({ stderrLevels: Object.keys(winston.config.npm.levels) })],
  });
  return logger;
}

/** A logger that drops everything (tests that do not care about logs). */
export function silentLogger(): Logger {
  return winston.createLogger({
    silent: true,
    transports: [new winston.transports.Console({ silent: true })],
  });
}

/** The message of an unknown thrown value, with the apiserver's body message where there is one. */
export function errorMessage(err: unknown): string {
  if (err && typeof err === 'object') {
    const body = (err as { body?: unknown }).body;
    if (body && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string') {
      return (body as { message: string }).message;
    }
    if (typeof body === 'string' && body.length > 0) {
      try {
        const parsed = JSON.parse(body) as { message?: unknown };
        if (typeof parsed.message === 'string') return parsed.message;
      } catch {
        /* not JSON */
      }
    }
    if (err instanceof Error) return err.message;
  }
  return String(err);
}
