import { connectivityState, type Client } from "@grpc/grpc-js";

/** One gRPC client, and so one connection, shared by every stream of a control-plane client. */
export interface RedialingChannel<C extends Client> {
  /**
   * The client to open a stream on. A client whose channel is in
   * TRANSIENT_FAILURE is closed and a new one dialed: grpc-js would fail the
   * stream at once until its own reconnect backoff (up to 120 s by default)
   * ran out, which would add to the caller's retry schedule. A client that is
   * ready, connecting or idle (it dials on the stream) is kept.
   */
  open(): C;
  /** How many clients were dialed so far. */
  dials(): number;
  /** Closes the current client; a later `open()` dials again. */
  close(): void;
}

/**
 * Makes the retries of streams over `dial()`'s client each reach the server
 * on the caller's schedule. `dial` should set `grpc.use_local_subchannel_pool`:
 * grpc-js shares subchannels between equal channels, and a shared one would
 * bring the failed one's backoff along.
 */
export function createRedialingChannel<C extends Client>(dial: () => C): RedialingChannel<C> {
  let current: C | undefined;
  let dialed = 0;
  return {
    open() {
      if (current !== undefined && current.getChannel().getConnectivityState(false) === connectivityState.TRANSIENT_FAILURE) {
        // In TRANSIENT_FAILURE a channel has no connection, no stream and no queued call: nothing is lost.
        current.close();
        current = undefined;
      }
      if (current === undefined) {
        current = dial();
        dialed++;
      }
      return current;
    },
    dials: () => dialed,
    close() {
      current?.close();
      current = undefined;
    },
  };
}
