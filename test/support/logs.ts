/** A logger for tests that records what it was told, so a test can wait on a log line. */
import { Writable } from 'node:stream';
import winston from 'winston';

/** One recorded log entry. */
export interface LogEntry {
  level: string;
  message: string;
  [field: string]: unknown;
}

/** A winston logger (all levels) that keeps its entries in `entries`. */
export function memoryLogger(): { logger: winston.Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      entries.push(JSON.parse(chunk.toString('utf8')) as LogEntry);
      cb();
    },
  });
  const logger = winston.createLogger({
    level: 'silly',
    format: winston.format.json(),
    transports: [new winston.transports.Stream({ stream })],
  });
  return { logger, entries };
}
