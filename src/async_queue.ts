/**
 * A bounded, channel-like async queue: producers {@link AsyncQueue.offer} items without ever
 * blocking (a full queue refuses, like a Go `select` with a `default` case), consumers either
 * {@link AsyncQueue.tryTake} one at once or {@link AsyncQueue.take} and wait for the next. The
 * connection pool keeps its idle connections in one; the module itself knows nothing of sockets.
 *
 * ```ts
 * import { AsyncQueue } from "./async_queue.ts";
 *
 * const queue = new AsyncQueue<string>({ capacity: 2, order: "lifo" });
 * queue.offer("a");
 * queue.offer("b");
 * console.log(queue.offer("c")); // false: full
 * console.log(queue.tryTake()); // "b": most recently offered first
 * ```
 *
 * @module
 */

/** Thrown to a waiting {@link AsyncQueue.take} when the queue is closed. */
export class QueueClosedError extends Error {
  constructor() {
    super("the queue is closed");
    this.name = "QueueClosedError";
  }
}

/** Options for {@link AsyncQueue}. */
export interface AsyncQueueOptions {
  /** Most items held at once; `offer` refuses beyond it. A whole number, 0 or more. */
  capacity: number;
  /**
   * Which item a take gets: `"lifo"` the most recently offered (a pool's most recently used
   * connection), `"fifo"` the oldest. Default `"fifo"`.
   */
  order?: "lifo" | "fifo";
}

interface Waiter<T> {
  resolve(item: T): void;
  reject(reason: unknown): void;
}

/** A bounded async queue with waiting consumers. See the module documentation. */
export class AsyncQueue<T> {
  readonly #capacity: number;
  readonly #lifo: boolean;
  #items: T[] = [];
  /** Takers waiting, first come first served: a `Set`, so that one that gives up leaves in O(1). */
  #waiters = new Set<Waiter<T>>();
  #closed = false;

  /** Creates an empty queue. @throws {RangeError} when `capacity` is not a whole number >= 0. */
  constructor(options: AsyncQueueOptions) {
    if (!Number.isInteger(options.capacity) || options.capacity < 0) {
      throw new RangeError(`capacity must be a whole number >= 0, got ${options.capacity}`);
    }
    this.#capacity = options.capacity;
    this.#lifo = options.order === "lifo";
  }

  /** Items held now. */
  get size(): number {
    return this.#items.length;
  }

  /** Most items held at once. */
  get capacity(): number {
    return this.#capacity;
  }

  /** Consumers waiting in {@link take}. */
  get waiting(): number {
    return this.#waiters.size;
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Hands `item` to the longest-waiting consumer, or holds it if there is room.
   *
   * @returns `false` when the queue is closed or full; the caller keeps (and must dispose of) the
   * item.
   */
  offer(item: T): boolean {
    if (this.#closed) return false;
    for (const waiter of this.#waiters) { // the first one: a Set iterates in insertion order
      this.#waiters.delete(waiter);
      waiter.resolve(item);
      return true;
    }
    if (this.#items.length >= this.#capacity) return false;
    this.#items.push(item);
    return true;
  }

  /** Takes an item if one is held, without waiting; `undefined` otherwise. */
  tryTake(): T | undefined {
    return this.#lifo ? this.#items.pop() : this.#items.shift();
  }

  /**
   * Takes an item, waiting for the next {@link offer} when none is held. Waiters are served in
   * the order they came.
   *
   * @throws {QueueClosedError} when the queue is (or gets) closed.
   * @throws `signal.reason` when `signal` aborts first; the waiter is then gone and an item offered
   * later is not lost.
   */
  take(signal?: AbortSignal): Promise<T> {
    if (this.#closed) return Promise.reject(new QueueClosedError());
    const held = this.tryTake();
    if (held !== undefined) return Promise.resolve(held);
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        this.#waiters.delete(waiter);
        reject(signal?.reason);
      };
      const waiter: Waiter<T> = {
        resolve: (item) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(item);
        },
        reject: (reason) => {
          signal?.removeEventListener("abort", onAbort);
          reject(reason);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.add(waiter);
    });
  }

  /** Removes `item` if held. @returns whether it was. */
  remove(item: T): boolean {
    const index = this.#items.indexOf(item);
    if (index < 0) return false;
    this.#items.splice(index, 1);
    return true;
  }

  /**
   * Removes and returns every held item for which `predicate` is true, oldest first.
   */
  removeWhere(predicate: (item: T) => boolean): T[] {
    const removed: T[] = [];
    this.#items = this.#items.filter((item) => {
      if (!predicate(item)) return true;
      removed.push(item);
      return false;
    });
    return removed;
  }

  /** The held items, oldest offered first (a snapshot). */
  snapshot(): T[] {
    return [...this.#items];
  }

  /**
   * Closes the queue: waiting and later takes reject with {@link QueueClosedError}, offers
   * refuse. @returns the items still held, for the caller to dispose of.
   */
  close(): T[] {
    if (this.#closed) return [];
    this.#closed = true;
    const waiters = this.#waiters;
    this.#waiters = new Set();
    for (const waiter of waiters) waiter.reject(new QueueClosedError());
    const items = this.#items;
    this.#items = [];
    return items;
  }
}
