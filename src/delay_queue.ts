/**
 * A queue of items that each fall due a fixed delay after they were added, served by one timer
 * for the whole queue. Due items are handled in batches, so a busy proxy wakes up at most about
 * twice per delay for all of its sessions instead of once per session (measured: a timer per
 * session cost about 15% of the connect-per-request rate on this 2-core machine).
 *
 * ```ts
 * import { DelayQueue } from "./delay_queue.ts";
 *
 * const queue = new DelayQueue<string>(5, (item) => console.log(`${item} is due`));
 * queue.add("a");
 * // ... at least 5 ms later: "a is due"
 * queue.clear();
 * ```
 *
 * @module
 */

/** Items that fall due `delayMs` after they were added; see the module documentation. */
export class DelayQueue<T> {
  readonly #delayMs: number;
  readonly #onDue: (item: T, lateMs: number) => void;
  #items: (T | undefined)[] = [];
  #dueAt: number[] = [];
  #head = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the timer was set to run (`performance.now()` time). */
  #timerAt = 0;

  /**
   * @param delayMs how long after `add` an item falls due (at least; due items wait up to half
   * as long again to be handled together). Greater than 0.
   * @param onDue called once per item, in the order added, with how late the timer that found it
   * due ran (past the time it was set for: a stalled event loop, whose reads that became ready
   * meanwhile have not run yet). Must not throw.
   */
  constructor(delayMs: number, onDue: (item: T, lateMs: number) => void) {
    if (!(delayMs > 0)) throw new RangeError(`delayMs must be greater than 0, got ${delayMs}`);
    this.#delayMs = delayMs;
    this.#onDue = onDue;
  }

  /** Items not yet due. */
  get size(): number {
    return this.#items.length - this.#head;
  }

  /** Adds `item`; `onDue(item)` runs `delayMs` from now or a little later. */
  add(item: T): void {
    this.#items.push(item);
    this.#dueAt.push(performance.now() + this.#delayMs);
    if (this.#timer === undefined) this.#schedule(this.#delayMs);
  }

  /** Drops every item without calling `onDue`, and stops the timer. */
  clear(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#items = [];
    this.#dueAt = [];
    this.#head = 0;
  }

  #schedule(ms: number): void {
    this.#timerAt = performance.now() + ms;
    this.#timer = setTimeout(() => this.#fire(), ms);
  }

  #fire(): void {
    this.#timer = undefined;
    const now = performance.now();
    const lateMs = Math.max(0, now - this.#timerAt);
    while (this.#head < this.#items.length && this.#dueAt[this.#head] <= now) {
      const item = this.#items[this.#head] as T;
      this.#items[this.#head] = undefined;
      this.#head++;
      this.#onDue(item, lateMs);
    }
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#dueAt = [];
      this.#head = 0;
      return;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#dueAt = this.#dueAt.slice(this.#head);
      this.#head = 0;
    }
    const wait = Math.max(this.#dueAt[this.#head] - now, this.#delayMs / 2);
    this.#schedule(wait);
  }
}
