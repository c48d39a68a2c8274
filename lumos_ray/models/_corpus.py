"""A small fixed English corpus the tiny model's BPE tokenizer is trained on.

It ships as Python source (not a data file) so every install has it without
package-data rules, and so the tokenizer -- hence the whole model -- is the same on
every machine. Public-domain style prose written for this project.
"""

CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins "
    "with a single step. All that glitters is not gold.",
    "Agents are programs that observe, decide and act. An agent reads a question, calls "
    "a tool when it needs facts, and writes an answer for the user.",
    "A workflow is a graph of steps. Each step takes input, does some work and hands its "
    "output to the next step. Steps may run in parallel, branch on a condition, loop "
    "until a goal is met, or wait for a human to approve.",
    "Ray is a framework for distributed computing. Tasks run functions on a cluster; "
    "actors are stateful workers that keep data between calls. Ray Serve turns Python "
    "code into scalable HTTP services.",
    "A language model predicts the next token from the tokens before it. Greedy decoding "
    "always picks the most likely token; sampling draws from the distribution with a "
    "temperature that controls how random the text is.",
    "Low-rank adaptation, or LoRA, fine-tunes a large model by training two small "
    "matrices per layer. Many adapters can share one base model, so a server can answer "
    "for many tasks at once.",
    "Federated learning trains a shared model across many sites without moving their "
    "data. Each site trains locally and sends only updates; a server averages them into "
    "a new global model, round after round.",
    "Retrieval augmented generation looks up documents that match a question and gives "
    "them to the model as context. A knowledge graph links entities such as people, "
    "places and companies with relations between them.",
    "The weather today is sunny with a light breeze from the west. Tomorrow will bring "
    "clouds in the morning and rain in the evening, so take an umbrella.",
    "To make a cup of tea, boil fresh water, warm the pot, add one spoon of leaves per "
    "cup and let it steep for four minutes before you pour.",
    "The city library opens at nine in the morning and closes at six in the evening. "
    "Children may borrow five books at a time; adults may borrow ten.",
    "Mathematics is the study of numbers, shapes and patterns. Two plus two is four. "
    "Seven times eight is fifty six. The square root of eighty one is nine.",
    "Paris is the capital of France. Berlin is the capital of Germany. Tokyo is the "
    "capital of Japan. The river Thames flows through London, the capital of England.",
    "Water freezes at zero degrees Celsius and boils at one hundred degrees at sea "
    "level. The sun is a star; the earth orbits it once a year.",
    "Please call the search tool with a short query. The tool returns a list of results "
    "with a title, a link and a snippet. Use the results to answer the question.",
    "User: What is the capital of France? Assistant: The capital of France is Paris. "
    "User: Thank you! Assistant: You are welcome. Is there anything else I can help with?",
    "System: You are a helpful assistant. Answer briefly and honestly. If you do not "
    "know the answer, say that you do not know.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    "Once upon a time there was a small robot who loved to read. Every night it read a "
    "new story to the children of the village, and every morning it asked them which "
    "part they liked best.",
    "Good software is tested, documented and easy to change. Small functions with clear "
    "names help the next engineer understand why the code does what it does.",
    "The market opens on Monday. Prices rose by three percent last week, while the "
    "number of trades fell. Analysts expect a quiet month ahead.",
    "Science begins with a question. A scientist forms a hypothesis, designs an "
    "experiment, measures the results and shares them so others can check the work.",
    "Music, painting and poetry are old forms of art. A song can tell a story, a "
    "painting can hold a moment, and a poem can say much with few words.",
)
