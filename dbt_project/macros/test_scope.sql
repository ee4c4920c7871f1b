{#-
    Data tests configured with `where: "__new_rows__"` (every test: dbt_project.yml) check the
    rows of their model with an `ingested_at` after FRAUD_PLATFORM_TESTS_INGESTED_AFTER (an
    instant) when that variable is set, and the whole model otherwise. The transform asset sets
    it on the runs that kafka_arrivals_sensor requests (to the newest `ingested_at` silver held
    before the run), so a micro-batch tests what it added instead of the whole history;
    scheduled, UI and CI runs (tests/dbt) test everything, as do models without `ingested_at`.
    A `unique` test checks every row whose key a new row has: a new copy of an old key is a
    duplicate too. Those rows are found through `narrowed_to_new_values`, so that the scan skips
    the older row groups and files instead of reading the whole model. Overrides dbt's `get_where_subquery` (what generic tests select from); other
    `where` configs keep dbt's behaviour. Read at execution only: an environment variable read
    while parsing would be recorded for partial parsing.
-#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where == '__new_rows__' -%}
        {%- set after = env_var('FRAUD_PLATFORM_TESTS_INGESTED_AFTER', '') if execute else '' -%}
        {%- set columns = adapter.get_columns_in_relation(relation) if after else [] -%}
        {%- if 'ingested_at' in columns | map(attribute='name') | map('lower') | list -%}
            {%- set new_rows = "ingested_at > cast('" ~ after ~ "' as timestamptz)" -%}
            {%- set test = model.get('test_metadata') or {} -%}
            {%- if test.get('name') == 'unique' -%}
                {%- set key = test.get('kwargs', {}).get('column_name') -%}
                {%- set narrowed = narrowed_to_new_values(
                    relation, (config.get('meta') or {}).get('narrowed_by', key), new_rows
                ) -%}
                {%- do return(
                    '(select * from ' ~ relation ~ ' where ' ~ narrowed ~ ' and (' ~ key
                    ~ ') in (select ' ~ key ~ ' from ' ~ relation ~ ' where ' ~ new_rows
                    ~ ')) dbt_subquery'
                ) -%}
            {%- endif -%}
            {%- do return('(select * from ' ~ relation ~ ' where ' ~ new_rows ~ ') dbt_subquery') -%}
        {%- endif -%}
        {%- do return(relation) -%}
    {%- endif -%}
    {%- do return(adapter.dispatch('get_where_subquery', 'dbt')(relation)) -%}
{%- endmacro %}


{#-
    A predicate on `column` (an expression) that every row sharing a key with a new row meets:
    its value lies between the smallest and largest value among the new rows, both written as
    constants so that DuckDB prunes with them (row-group zone maps of a table, the Delta files'
    statistics of bronze) before the key lookup. A unique test's column is its key (equal keys,
    equal values); `meta: {narrowed_by: <column>}` names another the key determines (a Kafka
    record's offset for its `partition:offset` key, a string no range of which prunes). Prunes
    well when the column grows with ingestion (offsets, time-ordered ids), reads what the lookup
    read before otherwise; false when there is no new row.
-#}
{% macro narrowed_to_new_values(relation, column, new_rows) -%}
    {%- set found = run_query(
        'select cast(min(' ~ column ~ ') as varchar), cast(max(' ~ column ~ ') as varchar), '
        ~ 'typeof(min(' ~ column ~ ')) from ' ~ relation ~ ' where ' ~ new_rows
    ) -%}
    {%- set lowest, highest, type = found.rows[0][0], found.rows[0][1], found.rows[0][2] -%}
    {%- if lowest is none -%}{{ return('false') }}{%- endif -%}
    {{ return(
        '(' ~ column ~ ') between cast(' ~ quoted_literal(lowest) ~ ' as ' ~ type ~ ') and cast('
        ~ quoted_literal(highest) ~ ' as ' ~ type ~ ')'
    ) }}
{%- endmacro %}


{% macro quoted_literal(text) -%}
    {{ return("'" ~ (text | replace("'", "''")) ~ "'") }}
{%- endmacro %}
