import { mount } from "svelte";
import App from "./App.svelte";
import "./app.css";
import { clock } from "./lib/clock.svelte";

clock.start();
const target = document.getElementById("app");
if (target === null) throw new Error("index.html has no #app element");
export default mount(App, { target });
