// One timer for the whole window. It ticks once a second while the window is
// visible and stops while it is hidden: countdowns cost nothing in the tray.
// No CSS animation loops anywhere (a WebKitGTK countdown has been seen
// burning a whole core).

class Clock {
  /** This machine's clock, in milliseconds. */
  now = $state(Date.now());
  #timer: ReturnType<typeof setInterval> | null = null;

  start(): void {
    const sync = () => {
      if (document.hidden) {
        this.#stop();
      } else {
        this.now = Date.now();
        this.#run();
      }
    };
    document.addEventListener("visibilitychange", sync);
    sync();
  }

  #run(): void {
    if (this.#timer !== null) return;
    // Align ticks to whole seconds so every countdown changes together.
    const align = 1000 - (Date.now() % 1000);
    this.#timer = setTimeout(() => {
      this.now = Date.now();
      this.#timer = setInterval(() => (this.now = Date.now()), 1000);
    }, align);
  }

  #stop(): void {
    if (this.#timer !== null) {
      clearInterval(this.#timer);
      clearTimeout(this.#timer);
      this.#timer = null;
    }
  }
}

export const clock = new Clock();
