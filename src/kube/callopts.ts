/**
 * Per-call options for client-node 2.x's generated API methods (their last
 * parameter): a patch content type and a request deadline.
 *
 * The generated patch methods pick 'application/json-patch+json' unless told
 * otherwise; the supported way to choose another is a call-time middleware
 * that sets the header (client-node's setHeaderOptions). Call-time
 * middleware must be the Observable flavour (pre/post return client-node's
 * Observable): the Promise flavour the types also accept fails at runtime
 * in 2.0.1 ("toPromise is not a function").
 */
import {
  Observable,
  PatchStrategy,
  setHeaderOptions,
  type ConfigurationOptions,
  type ObservableMiddleware,
} from '@kubernetes/client-node';

/** The options object the generated API methods take last. */
export type CallOptions = ConfigurationOptions<ObservableMiddleware>;

/** Sends the body as a JSON merge patch (RFC 7386). */
export function mergePatch(opt?: CallOptions): CallOptions {
  return setHeaderOptions('Content-Type', PatchStrategy.MergePatch, opt);
}

/** Sends the body as a JSON patch (RFC 6902): a list of operations, `test` ones included. */
export function jsonPatch(opt?: CallOptions): CallOptions {
  return setHeaderOptions('Content-Type', PatchStrategy.JsonPatch, opt);
}

/**
 * Aborts the request (rejecting with a TimeoutError) if it has not completed
 * within `ms`. Without it a request on a connection that went silent waits
 * forever; leader election cannot afford that.
 */
export function withTimeout(ms: number, opt?: CallOptions): CallOptions {
  const timeout: ObservableMiddleware = {
    pre: (ctx) => {
      ctx.setSignal(AbortSignal.timeout(ms));
      return new Observable(Promise.resolve(ctx));
    },
    post: (rsp) => new Observable(Promise.resolve(rsp)),
  };
  return {
    ...opt,
    middleware: [...(opt?.middleware ?? []), timeout],
    middlewareMergeStrategy: 'append', // keep the client's own middleware (User-Agent)
  };
}
