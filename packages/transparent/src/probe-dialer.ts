import net from "node:net";
import type { ProbeDialer } from "./redirect-check.ts";

/**
 * The redirect check's default {@link ProbeDialer}: dials from this process,
 * writes the token and a newline, and resolves on the first byte of an
 * answer. `meshtls init`'s probe rule redirects the proxy's own connection to
 * the probe address (it comes before the proxy's UID is excluded), so no
 * other user and no capability is needed. Rejects with the dial's error (its
 * `code`: `EHOSTUNREACH`, `ECONNREFUSED`, `ETIMEDOUT`, `ECONNRESET`).
 */
export const dialProbe: ProbeDialer = (probe, token, timeoutMs) =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ host: probe.host, port: probe.port });
    const fail = (code: string, message: string): void => {
      socket.destroy();
      reject(Object.assign(new Error(message), { code }));
    };
    socket.setTimeout(timeoutMs, () => fail("ETIMEDOUT", `no answer in ${timeoutMs} ms`));
    socket.on("connect", () => socket.write(`${token}\n`));
    socket.once("data", () => {
      socket.destroy();
      resolve();
    });
    socket.on("end", () => fail("ECONNRESET", "closed without an answer"));
    socket.on("error", (error: NodeJS.ErrnoException) => fail(error.code ?? "ERR_PROBE", error.message));
  });
